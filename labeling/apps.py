from django.apps import AppConfig
from django.urls import register_converter


class IdConverter:
    """A row id in a URL: up to 18 digits, so that every id a path carries fits a database integer (signed 64-bit
    on PostgreSQL and SQLite); a longer one matches no URL, a 404 rather than the database's overflow."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labelling"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        register_converter(IdConverter, "id")  # before any URLconf loads: the API's and the admin's paths use it
