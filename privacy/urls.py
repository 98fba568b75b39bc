"""/api/v1/reports/ (privacy.api)."""

from django.urls import path

from privacy import api

urlpatterns = [
    path("", api.CatalogueView.as_view(), name="reports-catalogue"),
    path("dry-run/", api.DryRunView.as_view(), name="reports-dry-run"),
    path("releases/", api.ReleaseListView.as_view(), name="reports-releases"),
    path("releases/<uuid:release_id>/", api.ReleaseDetailView.as_view(), name="reports-release"),
    path(
        "releases/<uuid:release_id>/export/<str:fmt>/",
        api.ExportView.as_view(),
        name="reports-export",
    ),
    path("budget/<str:period>/", api.BudgetView.as_view(), name="reports-budget"),
]
