from django.urls import path

from nudges import views

urlpatterns = [
    path("nudges/", views.NudgeListView.as_view(), name="nudge-list"),
    path("nudges/<uuid:delivery_id>/feedback/", views.FeedbackView.as_view(), name="feedback"),
    path("decisions/", views.DecisionView.as_view(), name="decisions"),
    path("events/", views.EventBatchView.as_view(), name="events"),
    path("me/", views.MeView.as_view(), name="me"),
]
