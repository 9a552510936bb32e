from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from todos import views

urlpatterns = [
    path("", views.index, name="index"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("shapes/todos/", views.todos_shape),
    path("shapes/lists/", views.lists_shape),
    path("shapes/memberships/", views.memberships_shape),
    path("api/mutations/", views.mutations),
    path("api/lists/", views.new_list),
    path("api/lists/<int:list_id>/members/", views.share),
    path("api/lists/<int:list_id>/members/<int:user_id>/", views.unshare),
    path("static/app.js", views.bundle),
]
