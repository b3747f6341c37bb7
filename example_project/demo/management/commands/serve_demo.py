"""Run the demo: the web pages on 127.0.0.1:8000 and a kojo_server, until Ctrl-C."""

import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the demo site and run kojo_server beside it."

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args, addrport, **options):
        web = subprocess.Popen([sys.executable, sys.argv[0], "runserver", addrport, "--noreload"])
        self.stdout.write(f"demo site: http://{addrport}/  (admin: manage.py createsuperuser, then /admin/)")
        try:
            call_command("kojo_server")
        finally:
            web.terminate()
            web.wait(10)
