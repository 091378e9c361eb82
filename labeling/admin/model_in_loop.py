"""The project's reward model page: the current reward model against raters on new judgements (overall, newest,
by rater, week and slice, with 95% intervals), the drift warning, how much of the open tasks it has scored, and the
task order those scores drive."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render

from labeling import runs, selectors
from labeling.models import Project


def reward_model_view(modeladmin, request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_object_or_404(Project, pk=project_id)
    if request.method == "POST":
        run = runs.open_responses_scoring_next(project=project, refresh=True)
        modeladmin.message_user(
            request,
            f"Score run {run.pk} started."
            if run
            else "Nothing left to score (or a score run is under way): the "
            "task priorities were written again from the scores there are.",
            messages.SUCCESS if run else messages.INFO,
        )
        return HttpResponseRedirect(request.get_full_path())
    slice_key = request.GET.get("slice") or selectors.ORIGIN_SLICE
    agreement = selectors.reward_model_agreement(project=project, slice_key=slice_key)
    overall = agreement.by("all")
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "original": project,
        "title": f"Reward model against raters: {project.name}",
        "project": project,
        "agreement": agreement,
        "overall": overall[0] if overall else None,
        "tables": [
            ("by-rater", "By rater", agreement.by("rater")),
            ("by-week", "By week (ISO)", agreement.by("week")),
            ("by-slice", f"By {slice_key}", agreement.by("slice")),
        ],
    }
    return render(request, "admin/labeling/project/reward_model.html", context)
