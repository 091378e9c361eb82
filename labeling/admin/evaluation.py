"""The project's evaluation page: its eval prompts and their seeded split, the leaderboard of the versions its
judgements compare (with an interval chart, CSV and JSON), and the same leaderboard by the other judges; and a
PPO run's over-optimisation check (its probe answers sent to raters, score and win rate against KL)."""

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render

from labeling import leaderboard, selectors, services
from labeling.admin import charts
from labeling.errors import ApplicationError
from labeling.models import Project, Prompt, TrainingRun

PROMPT_CHOICES = (("eval", "eval prompts"), ("all", "all prompts"))


class EvalSplitForm(forms.Form):
    fraction = forms.FloatField(
        initial=0.1, min_value=0.01, max_value=0.99,
        help_text="Draw training prompts at random and mark them eval prompts until this share of all prompts is.",
    )  # fmt: skip
    seed = forms.IntegerField(initial=0, help_text="The same prompts and seed draw the same eval prompts.")


class LeaderboardForm(forms.Form):
    judge = forms.ChoiceField(choices=[(judge, judge) for judge in selectors.JUDGES], required=False)
    prompts = forms.ChoiceField(choices=PROMPT_CHOICES, required=False)
    reference = forms.CharField(required=False, max_length=200)


def board_options(project: Project, query) -> dict:
    """The leaderboard's judge, prompts and reference from a query (its defaults where missing): eval prompts
    when the project has any, else all prompts."""
    form = LeaderboardForm(query)
    data = form.cleaned_data if form.is_valid() else {}
    prompts = data.get("prompts") or (
        "eval" if Prompt.objects.filter(project=project, is_eval=True).exists() else "all"
    )
    return {"judge": data.get("judge") or "human", "prompts": prompts, "reference": data.get("reference") or None}


def board_download(board: leaderboard.Leaderboard, options: dict, project: Project, file_format: str) -> HttpResponse:
    name = f"{project.slug}-leaderboard-{options['judge']}-{options['prompts']}"
    if file_format == "csv":
        response = HttpResponse(leaderboard.as_csv(board), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response
    response = JsonResponse({"judge": options["judge"], "prompts": options["prompts"], **board.as_dict()})
    response["Content-Disposition"] = f'attachment; filename="{name}.json"'
    return response


def evaluation_view(modeladmin, request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_object_or_404(Project, pk=project_id)
    split_form = EvalSplitForm(request.POST or None)
    if request.method == "POST" and split_form.is_valid():
        try:
            split = services.eval_prompts_split(project=project, **split_form.cleaned_data)
        except ApplicationError as error:
            split_form.add_error(None, error.message)
        else:
            used = (
                f" {split.already_used} of them had judgements or demonstrations already." if split.already_used else ""
            )
            modeladmin.message_user(
                request,
                f"{split.marked} prompts marked eval: {split.eval_prompts} of {split.prompts} are eval prompts.{used}",
                messages.WARNING if split.already_used else messages.SUCCESS,
            )
            return HttpResponseRedirect(request.get_full_path())
    options = board_options(project, request.GET)
    eval_only = options["prompts"] == "eval"
    boards = {
        judge: selectors.project_leaderboard(
            project=project, judge=judge, eval_only=eval_only, reference=options["reference"]
        )
        for judge in selectors.JUDGES
    }
    fallback = ""
    if "judge" not in request.GET and not boards["human"].comparisons:
        # No rater has compared versions yet: show what another judge has, and say so.
        other = next((judge for judge, board in boards.items() if board.comparisons), None)
        if other is not None:
            fallback, options["judge"] = (
                f"No rater has compared versions on these prompts yet: judged by {other}.",
                other,
            )
    board = boards[options["judge"]]
    file_format = request.GET.get("format")
    if file_format in ("csv", "json"):
        return board_download(board, options, project, file_format)
    judges = [
        {"judge": judge, "board": other, "tau": leaderboard.ranking_agreement(board, other)}
        for judge, other in boards.items()
    ]
    prompts = Prompt.objects.filter(project=project)
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "original": project,
        "title": f"Evaluation: {project.name}",
        "split_form": split_form,
        "eval_prompts": prompts.filter(is_eval=True).count(),
        "prompt_count": prompts.count(),
        "board": board,
        "fallback": fallback,
        "chart": charts.leaderboard_chart(board.standings),
        "chart_assets": charts.chart_assets(),
        "options": options,
        "judges": judges,
        "query": request.GET.urlencode(),
    }
    return render(request, "admin/labeling/project/evaluation.html", context)


class ProbeSendForm(forms.Form):
    prompts = forms.IntegerField(
        initial=0, min_value=0, help_text="Probe prompts to send (0: all); each gives one task per probe point."
    )


def probe_chart(points):
    """The reward model's score (orange, left axis) and the raters' win rate against the start (blue, right axis,
    0 to 1: 0.5 is as good as the start) at each probe point, against its KL to the starting policy."""
    if len(points) < 2:
        return None
    ordered = sorted(points, key=lambda point: point.kl)
    win_rates = [0.5 if point.step == 0 else point.win_rate for point in ordered]
    return charts.chart(
        "probe-chart", title="Against KL: the reward model's score (orange) and the raters' win rate against the "
        "start (blue; 0.5 is as good as the start).", x=[round(point.kl, 4) for point in ordered],
        series=[{"label": "score", "values": [round(point.score, 4) for point in ordered], "colour": "#c4861a"},
                {"label": "win rate", "values": win_rates, "colour": "#417690", "scale": "share"}],
        x_label="KL", y_label="score", right_axes=[{"scale": "share", "label": "win rate", "range": [0, 1]}],
        points=True, width=480, height=200,
    )  # fmt: skip


def overoptimisation_view(modeladmin, request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=run_id, kind=TrainingRun.Kind.PPO)
    form = ProbeSendForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            made = services.overoptimisation_tasks_create(run=run, prompts=form.cleaned_data["prompts"])
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            modeladmin.message_user(request, f"{made.tasks} pairwise tasks sent to raters.", messages.SUCCESS)
            return HttpResponseRedirect(request.get_full_path())
    report = selectors.overoptimisation_report(run=run)
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "original": run,
        "title": f"Over-optimisation check: {run}",
        "form": form,
        "report": report,
        "chart": probe_chart(report.points),
        "chart_assets": charts.chart_assets(),
    }
    return render(request, "admin/labeling/trainingrun/overoptimisation.html", context)
