from myriad.models.simulated.runner import serve_main

serve_main()
