from django.urls import path

from nudges import hotpath, views

urlpatterns = [
    path("nudges/", hotpath.inbox, name="nudge-list"),
    path("nudges/<uuid:delivery_id>/feedback/", views.FeedbackView.as_view(), name="feedback"),
    path("decisions/", hotpath.decisions, name="decisions"),
    path("events/", views.EventBatchView.as_view(), name="events"),
    path("me/", views.MeView.as_view(), name="me"),
]
