"""Constitutions, their principles, and critique chains."""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse

from labeling import services
from labeling.admin.base import ReadOnlyAdmin
from labeling.errors import ApplicationError
from labeling.models import (
    Constitution,
    CritiqueChain,
    CritiqueRound,
    Principle,
)


class PrincipleInline(admin.StackedInline):
    model = Principle
    extra = 0
    fields = ["position", "name", "is_active", "critique_request", "revision_request", "comparison_question"]


class ConstitutionImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(
        help_text='JSON: critique/revision entries ({"key": {"prompt": [...CritiqueRequest...], "edit_request": '
        '...RevisionRequest...}}) or "choose the response that ..." principles (a list, or {"principles": [...]}).'
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    make_default = forms.BooleanField(required=False, help_text="Runs use it unless told otherwise.")


@admin.register(Constitution)
class ConstitutionAdmin(admin.ModelAdmin):
    """Constitutions and their principles, editable; import one from JSON; pick the default."""

    list_display = ["name", "is_default", "principle_count", "created_at"]
    search_fields = ["name", "description", "principles__name"]
    inlines = [PrincipleInline]
    readonly_fields = ["is_default"]
    actions = ["make_default"]
    change_list_template = "admin/labeling/constitution/change_list.html"

    @admin.display(description="principles")
    def principle_count(self, constitution: Constitution) -> int:
        return constitution.principles.count()

    @admin.action(description="Make the selected constitution the default")
    def make_default(self, request: HttpRequest, queryset: QuerySet[Constitution]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one constitution.", messages.WARNING)
            return
        constitution = services.constitution_make_default(constitution=queryset.get())
        self.message_user(request, f"{constitution.name} is now the default constitution.")

    def get_urls(self):
        own = [
            path("import/", self.admin_site.admin_view(self.import_view), name="labeling_constitution_import"),
        ]
        return own + super().get_urls()

    def import_view(self, request: HttpRequest) -> HttpResponse:
        form = ConstitutionImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                constitution = services.constitution_import(
                    name=form.cleaned_data["name"],
                    data=form.cleaned_data["file"].read(),
                    description=form.cleaned_data["description"],
                    make_default=form.cleaned_data["make_default"],
                )
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                count = constitution.principles.count()
                self.message_user(request, f"Imported {constitution.name} with {count} principles.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:labeling_constitution_change", args=[constitution.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import a constitution",
            "form": form,
            "button": "Import",
        }
        return render(request, "admin/labeling/project/data_form.html", context)


class CritiqueRoundInline(admin.TabularInline):
    model = CritiqueRound
    extra = 0
    fields = readonly_fields = ("number", "principle", "critique", "revision")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(CritiqueChain)
class CritiqueChainAdmin(ReadOnlyAdmin):
    """SL-CAI chains: the prompt, the first answer, each round's principle, critique and revision."""

    list_display = ["id", "project", "prompt", "model_name", "review_status", "created_at"]
    list_filter = ["project", "review_status", "constitution"]
    search_fields = ["initial_response", "final_revision"]
    inlines = [CritiqueRoundInline]


@admin.register(Principle)
class PrincipleAdmin(admin.ModelAdmin):
    list_display = ["name", "constitution", "position", "is_active"]
    list_filter = ["constitution", "is_active"]
    search_fields = ["name", "critique_request", "revision_request", "comparison_question"]


@admin.register(CritiqueRound)
class CritiqueRoundAdmin(ReadOnlyAdmin):
    list_display = ["chain", "number", "principle"]
    list_filter = ["principle"]
    search_fields = ["critique", "revision"]
