"""Constitutional AI: constitutions and their principles, and critique-and-revise chains with their rounds."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.models.constraints import in_choices
from labeling.models.content import Demonstration, Project, Prompt
from labeling.models.runs import TrainingRun


class Constitution(models.Model):
    """A set of principles that drive self-critique and revision (SL-CAI) and AI preference labels (RLAIF)."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    is_default = models.BooleanField(default=False, help_text="The constitution runs use unless told otherwise.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="constitution_one_default"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Principle(models.Model):
    """One principle: how to ask for a critique and a revision by it, and how to ask which of two responses
    follows it better. A principle imported from a layout that has only one side leaves the other blank."""

    constitution = models.ForeignKey(Constitution, on_delete=models.CASCADE, related_name="principles")
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=200, help_text="A short label, shown in the admin and the agreement table.")
    critique_request = models.TextField(blank=True, help_text="Asks the model to criticise its last response.")
    revision_request = models.TextField(blank=True, help_text="Asks the model to rewrite it to answer the critique.")
    comparison_question = models.TextField(
        blank=True, help_text='For AI feedback, e.g. "Which of these responses is less harmful? ..."'
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["constitution", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["constitution", "name"], name="principle_name_unique"),
            models.CheckConstraint(
                condition=~Q(critique_request="", comparison_question=""), name="principle_asks_something"
            ),
            models.CheckConstraint(
                condition=Q(critique_request="", revision_request="")
                | (~Q(critique_request="") & ~Q(revision_request="")),
                name="principle_critique_and_revision_together",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ReviewStatus(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    ACCEPTED = "accepted", "Accepted"
    EDITED = "edited", "Accepted with edits"
    REJECTED = "rejected", "Rejected"


class CritiqueChain(models.Model):
    """SL-CAI for one prompt: the model's first answer, then rounds of critique and revision by principles
    drawn from a constitution. Raters review the final revision; accepted ones become demonstrations."""

    ReviewStatus = ReviewStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="critique_chains")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="critique_chains")
    constitution = models.ForeignKey(Constitution, on_delete=models.PROTECT, related_name="chains")
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="critique_chains"
    )
    model_name = models.CharField(max_length=300, help_text="The model that answered, criticised and revised.")
    initial_response = models.TextField()
    final_revision = models.TextField()
    review_status = models.CharField(max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PENDING)
    reviewed_text = models.TextField(blank=True, help_text="The reviewer's edit of the final revision.")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    demonstration = models.OneToOneField(
        Demonstration, on_delete=models.SET_NULL, null=True, blank=True, related_name="critique_chain"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=in_choices("review_status", ReviewStatus), name="chain_review_valid")
        ]

    def __str__(self) -> str:
        return f"Critique chain {self.pk} on prompt {self.prompt_id}"


class CritiqueRound(models.Model):
    chain = models.ForeignKey(CritiqueChain, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveSmallIntegerField()
    principle = models.ForeignKey(Principle, on_delete=models.PROTECT, related_name="critique_rounds")
    critique = models.TextField()
    revision = models.TextField()

    class Meta:
        ordering = ["chain", "number"]
        constraints = [models.UniqueConstraint(fields=["chain", "number"], name="critique_round_unique")]

    def __str__(self) -> str:
        return f"Round {self.number} of chain {self.chain_id}"
