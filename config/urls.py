from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "RLHF Studio administration"
admin.site.site_title = "RLHF Studio"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("labeling.urls")),
    path("", include("frontend.urls")),
]
