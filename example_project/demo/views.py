from django.db import transaction
from django.shortcuts import redirect, render

import kojo
from kojo.models import Job


def index(request):
    """Schedule a greeting job on POST; list the latest jobs."""
    if request.method == "POST":
        with transaction.atomic():
            kojo.schedule("demo_greet", {"name": request.POST.get("name") or "world"})
        return redirect("index")
    jobs = Job.objects.select_related("job_type").order_by("-id")[:20]
    return render(request, "demo/index.html", {"jobs": jobs})
