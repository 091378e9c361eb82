"""A run's page in the admin tells the truth: the phase it is in and how far along, time left only while it
trains (counting down between the trainer's reports), curve points from logging steps only, one held-out
figure per epoch, the model it produced, the EOS rate of PPO's episodes, and Cancel instead of Delete while
it is active."""

import json
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from labeling.models import ModelVersion, TrainingRun
from labeling.runs import seconds_left
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def page(admin_client, run) -> str:
    response = admin_client.get(reverse("admin:labeling_trainingrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def readonly(html: str, field: str) -> str:
    """The text of one read-only field of the change form."""
    match = re.search(rf'field-{field}.*?<div class="readonly">(.*?)</div>', html, re.S)
    assert match, f"no field {field}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_a_training_run_shows_its_phase_progress_and_a_time_left_that_counts_down(admin_client):
    now = time.time()
    run = TrainingRun.objects.create(
        project=ProjectFactory(), kind="reward", status="running", progress=0.43,
        metrics={"phase": "training", "phase_progress": 0.45, "eta_s": 100.0, "eta_at": now - 30},
    )  # fmt: skip
    html = page(admin_client, run)
    assert readonly(html, "phase") == "training (45%)"
    assert readonly(html, "progress_bar") == "43%"
    left = re.fullmatch(r"about (\d+) s", readonly(html, "eta"))
    assert left and 60 <= int(left.group(1)) <= 70  # 100 s estimated 30 s ago, less the page's own time
    assert seconds_left(run, timezone.now() + timedelta(seconds=200)) == 0.0
    run.metrics = {**run.metrics, "phase": "normalising", "phase_progress": 0.2}
    run.save()
    html = page(admin_client, run)
    assert readonly(html, "phase") == "normalising (20%)" and readonly(html, "eta") == "-"
    assert 'id="cancel-run"' in html and "deletelink" not in html


def test_the_cancel_button_stops_a_running_run(admin_client):
    run = TrainingRun.objects.create(project=ProjectFactory(), kind="sft", status="running")
    response = admin_client.post(reverse("admin:labeling_trainingrun_cancel", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert run.cancel_requested and "is stopping" in response.content.decode()
    queued = TrainingRun.objects.create(project=ProjectFactory(), kind="sft")
    admin_client.post(reverse("admin:labeling_trainingrun_cancel", args=[queued.pk]))
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    assert admin_client.get(reverse("admin:labeling_trainingrun_cancel", args=[run.pk])).status_code == 302


def test_only_staff_allowed_to_change_runs_can_cancel_one(client, rater):
    run = TrainingRun.objects.create(project=ProjectFactory(), kind="sft", status="running")
    client.force_login(rater)
    response = client.post(reverse("admin:labeling_trainingrun_cancel", args=[run.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_trainingrun"))
    client.force_login(viewer)
    assert 'id="cancel-run"' not in page(client, run)
    assert client.post(reverse("admin:labeling_trainingrun_cancel", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert not run.cancel_requested


def test_the_lists_bulk_delete_refuses_a_selection_with_an_active_run(admin_client):
    project = ProjectFactory()
    running = TrainingRun.objects.create(project=project, kind="sft", status="running")
    finished = TrainingRun.objects.create(project=project, kind="ppo", status="failed")
    changelist = reverse("admin:labeling_trainingrun_changelist")
    both = {"action": "delete_selected", "_selected_action": [running.pk, finished.pk], "post": "yes"}
    assert admin_client.post(changelist, both).status_code == 403
    assert TrainingRun.objects.count() == 2
    admin_client.post(changelist, {**both, "_selected_action": [finished.pk]})
    assert list(TrainingRun.objects.values_list("pk", flat=True)) == [running.pk]


def test_a_finished_reward_run_shows_one_held_out_figure_per_epoch_and_links_its_model(admin_client):
    project = ProjectFactory()
    history = [
        {"step": 10, "loss": 0.7, "accuracy": 0.5, "phase": "training"},
        {"step": 20, "loss": 0.6, "accuracy": 0.6, "phase": "training"},
        {"epoch": 1, "eval_accuracy": 0.78, "eval_loss": 0.5, "phase": "evaluating"},
        {"event": "done", "steps": 20, "eval_accuracy": 0.78, "phase": "done", "progress": 1.0},
    ]
    run = TrainingRun.objects.create(
        project=project, kind="reward", status="succeeded", progress=1.0, history=history,
        metrics={"phase": "done", "eval_accuracy": 0.78, "promotion": "Made current: the project had none."},
    )  # fmt: skip
    version = ModelVersion.objects.create(project=project, kind="reward", name="reward-1", training_run=run)
    html = page(admin_client, run)
    assert "held-out accuracy by epoch: 1: 0.780</p>" in html
    assert html.count('<figure class="chart"') == 2  # loss and accuracy, from the two logging steps
    loss = json.loads(
        re.search(rf'<script id="run-{run.pk}-loss" type="application/json">(.*?)</script>', html).group(1)
    )
    assert loss["x"] == [10, 20] and loss["series"][0]["values"] == [0.7, 0.6]  # the chart's points are the run's
    produced = readonly(html, "produced")
    assert produced.startswith("reward-1") and "Made current" in produced
    assert reverse("admin:labeling_modelversion_change", args=[version.pk]) in html
    assert readonly(html, "phase") == "done" and 'id="cancel-run"' not in html


def test_a_reward_run_and_its_model_show_the_kept_epoch_calibration_margins_and_length_bias(admin_client):
    project = ProjectFactory()
    metrics = {
        "phase": "done", "eval_accuracy": 0.64, "eval_pairs": 180, "best_epoch": 2,
        "epochs": [
            {"epoch": 1, "eval_loss": 0.66, "eval_accuracy": 0.61},
            {"epoch": 2, "eval_loss": 0.64, "eval_accuracy": 0.64},
            {"epoch": 3, "eval_loss": 0.67, "eval_accuracy": 0.63},
        ],
        "calibration": {"temperature": 1.8, "ece_before": 0.12, "ece_after": 0.04, "ece_floor": 0.07},
        "eval_accuracy_by_margin": {"1": {"accuracy": 0.55, "pairs": 40}, "none": {"accuracy": 0.66, "pairs": 140}},
        "length_correlation": 0.31, "prefers_longer": 0.62, "raters_prefer_longer": 0.45,
    }  # fmt: skip
    run = TrainingRun.objects.create(
        project=project, kind="reward", status="succeeded", progress=1.0, history=[], metrics=metrics
    )
    version = ModelVersion.objects.create(
        project=project, kind="reward", name="reward-1", training_run=run, metrics=metrics
    )
    html = page(admin_client, run)
    assert "<tr><td>2 (kept)</td><td>0.6400</td><td>0.640</td></tr>" in html
    assert "<tr><td>3</td><td>0.6700</td><td>0.630</td></tr>" in html
    quality = readonly(html, "quality")
    assert "temperature 1.800; expected calibration error 0.120 before, 0.040 after (on 180 pairs" in quality
    assert "margin 1: 0.550 (40 pairs), no margin: 0.660 (140 pairs)" in quality
    assert "the model prefers the longer reply in 0.62 of pairs, the raters in 0.45" in quality
    response = admin_client.get(reverse("admin:labeling_modelversion_change", args=[version.pk]))
    assert "temperature 1.800" in response.content.decode()
    assert readonly(page(admin_client, TrainingRun.objects.create(project=project, kind="sft")), "quality") == "-"


def test_a_failed_run_shows_its_error_first_and_where_it_stopped(admin_client):
    run = TrainingRun.objects.create(
        project=ProjectFactory(), kind="sft", status="failed", progress=0.05,
        metrics={"phase": "loading"}, error="Failed while loading: OSError: no such model (exited with code 2).",
        log_tail="Loading weights: 100%\nOSError: no such model",
    )  # fmt: skip
    html = page(admin_client, run)
    assert '<p class="errornote" id="run-error" role="alert">Failed while loading: OSError' in html
    assert html.index('id="run-error"') < html.index("field-progress_bar")
    assert readonly(html, "phase") == "stopped while loading" and readonly(html, "progress_bar") == "5%"


def test_ppo_shows_how_many_episodes_ended_and_warns_when_most_were_cut_off(admin_client):
    history = [{"step": step, "score": 0.1, "kl": 0.0, "eos_rate": rate} for step, rate in enumerate([0.1, 0.2], 1)]
    run = TrainingRun.objects.create(project=ProjectFactory(), kind="ppo", status="running", history=history)
    ending = readonly(page(admin_client, run), "episodes_ending")
    assert ending.startswith("15% of episodes ended with EOS") and "Raise the response length" in ending
    run.history = [{**line, "eos_rate": 0.9} for line in history]
    run.save()
    ending = readonly(page(admin_client, run), "episodes_ending")
    assert ending == "90% of episodes ended with EOS (last 2 logged iterations)"


def test_the_vendored_chart_library_is_the_pinned_release_and_served_from_our_static_files():
    from django.contrib.staticfiles import finders

    from labeling.admin import charts

    script = Path(finders.find("labeling/vendor/uplot/uPlot.iife.min.js")).read_text(encoding="utf-8")
    assert script.startswith(f"/*! https://github.com/leeoniya/uPlot (v{charts.UPLOT_VERSION}) */")
    assets = str(charts.chart_assets())
    assert "/static/labeling/vendor/uplot/uPlot.iife.min.js" in assets and "//cdn" not in assets
