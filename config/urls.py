from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

# Swagger UI sets inline styles as it draws; its scripts are still only our own files (the split view serves
# its set-up script as a file too).
api_docs = csp_update({"style-src": ["'unsafe-inline'"]})(SpectacularSwaggerSplitView.as_view(url_name="schema"))

handler404 = "labeling.errors.not_found"

admin.site.site_header = "RLHF Studio administration"
admin.site.site_title = "RLHF Studio"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("labeling.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", api_docs, name="api-docs"),
    path("", include("frontend.urls")),
]
