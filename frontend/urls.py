from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import views

app_name = "frontend"

urlpatterns = [
    path("", views.project_list, name="projects"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("p/<slug:slug>/", views.workbench, name="workbench"),
    path("p/<slug:slug>/demonstrate/", views.demonstrate, name="demonstrate"),
    path("p/<slug:slug>/review/", views.review, name="review"),
    path("p/<slug:slug>/adjudicate/", views.adjudicate, name="adjudicate"),
    path("healthz", views.health, name="health"),
]
