"""Pages of 50 rows, whose ``page`` parameter the schema documents with its lower bound."""

from rest_framework.pagination import PageNumberPagination


class Pages(PageNumberPagination):
    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {**parameter["schema"], "minimum": 1}
        return parameters
