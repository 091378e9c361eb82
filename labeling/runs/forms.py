"""Form fields the run kinds' admin forms share."""

from django import forms

from labeling.models import DatasetSnapshot, ModelVersion, Project


class ModelVersionChoiceField(forms.ModelChoiceField):
    """A project's models by name, with their held-out accuracy and which one is current."""

    def label_from_instance(self, version: ModelVersion) -> str:
        accuracy = (version.metrics or {}).get("eval_accuracy")
        parts = [version.name]
        if isinstance(accuracy, float):
            parts.append(f"held-out accuracy {accuracy:.3f}")
        if version.is_current:
            parts.append("current")
        parts.append(version.created_at.strftime("%Y-%m-%d %H:%M"))
        return " · ".join(parts)


class RunForm(forms.Form):
    """A run kind's admin form: its fields are the keyword arguments of the kind's start service."""

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.project = project

    def limit(self, name: str, queryset) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.ModelChoiceField), f"{name} is not a choice of rows"
        field.queryset = queryset

    def policy_choices(self, name: str) -> None:
        self.limit(name, ModelVersion.objects.filter(project=self.project, kind=ModelVersion.Kind.POLICY))

    def snapshots(self, name: str, *kinds: str):
        """The project's snapshots of ``kinds`` as the choices of field ``name``; returns them."""
        queryset = DatasetSnapshot.objects.filter(project=self.project, kind__in=kinds)
        self.limit(name, queryset)
        return queryset
