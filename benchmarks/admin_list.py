"""How fast the job list in the admin answers over a million jobs, with each filter and search.

Builds a scratch PostgreSQL database of its own (``test_admin_bench``, made and migrated by Django's
test database machinery, so it never touches another run's database), inserts N jobs (1,000,000 by
default) with one ``INSERT ... SELECT FROM generate_series`` statement, ANALYZEs, then times
``/admin/kojo/job/`` through Django's test client as a logged-in superuser: each filter, a deep page,
and each kind of search. It prints, per list, the median and worst wall time of the request, the number
of queries and the slowest query. Searching params by containment is timed twice: as the models stand,
and after creating the GIN index on ``params`` that ``kojo.listing`` recommends. Query times come from
Django's query log (millisecond resolution); the rest of a request is rendering the page.

Distribution of the jobs: 20 types (one of them rare: 1 job in 10,000), 8 servers (none for waiting and
held jobs), 85% complete_success, 5% complete_failed, 3% canceled, 6.5% waiting, 0.5% hold, 200 working.

Run ``cd /work/main && .venv/bin/python benchmarks/admin_list.py [--jobs N] [--repeat R] [--keep]``;
``--keep`` reuses the database of an earlier run that holds as many jobs instead of rebuilding it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "KOJO_TEST_DB": "postgres",
        "KOJO_TEST_DB_NAME": "admin_bench",
    }
)

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402

from kojo.models import Job, JobType, Server  # noqa: E402

TYPES = 20
SERVERS = 8
PARAMS_INDEX = "kojo_job_params_bench"
# Columns the insert sets itself; every other column gets its field's default (or NULL).
STATE_SQL = """CASE
    WHEN mod(i, 10000) < 8500 THEN 'complete_success'
    WHEN mod(i, 10000) < 9000 THEN 'complete_failed'
    WHEN mod(i, 10000) < 9300 THEN 'canceled'
    WHEN mod(i, 10000) < 9950 THEN 'waiting'
    WHEN mod(i, 10000) < 9998 THEN 'hold'
    ELSE 'working' END"""
SET_COLUMNS = {
    "job_type_id": "CASE WHEN mod(i, 10000) = 1 THEN %(rare)s ELSE %(first_type)s + mod(i, 19) END",
    "state": STATE_SQL,
    "params": "jsonb_build_object('n', i, 'batch', 'b' || (mod(i, 1000)), 'user', mod(i, 50000))",
    "start_after": "now() - make_interval(secs => 1000000 - i)",
    "created_at": "now() - make_interval(secs => 1000000 - i)",
    "state_changed_at": "now() - make_interval(secs => 1000000 - i)",
    # Waiting and held jobs have no server and no attempt yet.
    "server_id": "CASE WHEN mod(i, 10000) BETWEEN 9300 AND 9997 THEN NULL "
    "ELSE %(first_server)s + mod(i, 8) END",
    "attempts": "CASE WHEN mod(i, 10000) BETWEEN 9300 AND 9997 THEN 0 ELSE 1 END",
    "host": "'host-' || (mod(i, 8))",
}


def build(jobs: int) -> None:
    Job.objects.all().delete()
    JobType.objects.all().delete()
    Server.objects.all().delete()
    kinds = JobType.objects.bulk_create(
        JobType(type_code=f"bench_{n:02d}", name=f"bench {n}", worker="tests.kojo_jobs.noop")
        for n in range(TYPES)
    )
    servers = Server.objects.bulk_create(Server(host=f"host-{n}", pid=1000 + n) for n in range(SERVERS))
    columns, values, params = [], [], {
        "rare": kinds[-1].pk,
        "first_type": kinds[0].pk,
        "first_server": servers[0].pk,
        "jobs": jobs,
    }
    for field in Job._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.column in SET_COLUMNS:
            values.append(SET_COLUMNS[field.column])
        elif field.null:
            values.append("NULL")
        else:
            default = field.get_default()
            is_json = field.get_internal_type() == "JSONField"
            params[field.column] = json.dumps(default) if is_json else default
            values.append(f"%({field.column})s")
    sql = (
        f"INSERT INTO kojo_job ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM generate_series(1, %(jobs)s) AS i"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.execute("ANALYZE kojo_job")


def scenarios() -> list[tuple[str, dict[str, str]]]:
    common = JobType.objects.get(type_code="bench_00").pk
    rare = JobType.objects.get(type_code=f"bench_{TYPES - 1:02d}").pk
    server = Server.objects.order_by("pk").first().pk
    ids = Job.objects.order_by("pk").values_list("pk", flat=True)
    some_id = ids[min(500_000, ids.count() // 2)]
    return [
        ("no filter", {}),
        ("page 50", {"p": "50"}),
        ("state working (200 rows)", {"state__exact": "working"}),
        ("state hold", {"state__exact": "hold"}),
        ("state waiting", {"state__exact": "waiting"}),
        ("state canceled", {"state__exact": "canceled"}),
        ("state complete_success", {"state__exact": "complete_success"}),
        ("type common", {"job_type__id__exact": str(common)}),
        ("type rare (1 in 10,000)", {"job_type__id__exact": str(rare)}),
        ("type common + waiting", {"job_type__id__exact": str(common), "state__exact": "waiting"}),
        ("type rare + failed", {"job_type__id__exact": str(rare), "state__exact": "complete_failed"}),
        ("server", {"server__id__exact": str(server)}),
        ("no server", {"server__isnull": "True"}),
        ("server + complete_failed", {"server__id__exact": str(server), "state__exact": "complete_failed"}),
        ("type + state + server", {"job_type__id__exact": str(common), "state__exact": "complete_success",
                                   "server__id__exact": str(server)}),  # fmt: skip
        ("search id", {"q": str(some_id)}),
    ]


PARAMS_SEARCHES = [
    ("search params user=12345 (20 rows)", {"q": "user=12345"}),
    ("search params batch=b7 (1,000 rows)", {"q": "batch=b7"}),
    ('search params {"n": 424242} (1 row)', {"q": '{"n": 424242}'}),
    ("search params n=-1 (no row)", {"q": "n=-1"}),
]


def measure(client: Client, label: str, query: dict[str, str], repeat: int) -> None:
    url = reverse("admin:kojo_job_changelist")
    client.get(url, query)  # warm the caches, as an operator's second look would
    times, db_times, slowest, count = [], [], (0.0, ""), 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, query)
            times.append(time.perf_counter() - started)
        assert response.status_code == 200, (label, response.status_code)
        count = len(captured)
        db_times.append(sum(float(captured_query["time"]) for captured_query in captured.captured_queries))
        for captured_query in captured.captured_queries:
            if float(captured_query["time"]) > slowest[0]:
                slowest = (float(captured_query["time"]), captured_query["sql"])
    shown = len(response.context["cl"].result_list)
    print(
        f"{label:38} request median {statistics.median(times) * 1000:6.1f} ms, max {max(times) * 1000:6.1f}; "
        f"{count} queries, in the database {statistics.median(db_times) * 1000:5.1f} ms (slowest query "
        f"{slowest[0] * 1000:5.1f}); {shown:3} rows of {response.context['cl'].result_count}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="reuse an earlier run's database if it fits")
    args = parser.parse_args()

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=args.keep)
    started = time.perf_counter()
    if not args.keep or Job.objects.count() != args.jobs:
        build(args.jobs)
        print(f"inserted {args.jobs:,} jobs in {time.perf_counter() - started:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {PARAMS_INDEX}")
    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench")
    client = Client()
    client.force_login(user)
    total = Job.objects.count()
    version = f"{connection.pg_version // 10000}.{connection.pg_version % 10000}"
    print(f"PostgreSQL {version}, {total:,} jobs; times per request over {args.repeat} runs")
    for label, query in scenarios():
        measure(client, label, query, args.repeat)
    for label, query in PARAMS_SEARCHES:
        measure(client, label, query, args.repeat)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX {PARAMS_INDEX} ON kojo_job USING gin (params jsonb_path_ops)")
        cursor.execute("ANALYZE kojo_job")
    print(f"with a GIN index on params (jsonb_path_ops), built in {time.perf_counter() - started:.1f} s:")
    for label, query in PARAMS_SEARCHES:
        measure(client, label, query, args.repeat)
    if not args.keep:
        connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
