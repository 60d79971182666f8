"""(room placeholder: see its issue)"""
