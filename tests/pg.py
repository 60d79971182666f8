"""A real, throwaway PostgreSQL server for tests (the implementation lives with the
benchmarks, which start one too: ``myriad.bench._postgres``).

    with PostgresServer() as pg:
        url = pg.create_database()      # postgresql://myriad@127.0.0.1:PORT/t_ab12cd34
"""

from myriad.bench._postgres import PostgresServer

__all__ = ["PostgresServer"]
