"""Procrastinate on PostgreSQL (psycopg 3): 2 worker processes, each running one job at a time."""

import procrastinate

from peer_apps import PG_DSN, WORKERS, Processes, bin_path, noop, recreate_pg_database

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=PG_DSN))


@app.task(name="noop")
def procrastinate_noop():
    noop()


class Peer(Processes):
    label = "Procrastinate (PostgreSQL)"
    commands = [
        [
            bin_path("procrastinate"),
            "--app",
            "peer_apps.procrastinate_app.app",
            "worker",
            "--concurrency",
            "1",
        ],
    ] * WORKERS

    def clean(self) -> None:
        recreate_pg_database()
        with app.open():
            app.schema_manager.apply_schema()

    def enqueue(self, jobs: int) -> None:
        with app.open():
            for _ in range(jobs):
                procrastinate_noop.defer()
