"""The status page's URLs: ``path("tasks/", include("procpool_tasks.urls"))``.

Names are in the ``procpool_tasks`` namespace: ``reverse("procpool_tasks:status")``.
"""

from django.urls import path

from .web import views

app_name = "procpool_tasks"

urlpatterns = [
    path("", views.status_page, name="status"),
    path("status.json", views.status_json, name="status_json"),
    path("task/<str:result_id>/", views.task_page, name="task"),
    path("task/<str:result_id>/requeue/", views.requeue_task, name="requeue"),
    path("task/<str:result_id>/cancel/", views.cancel_task, name="cancel"),
    path("quarantine/<str:name>/drop/", views.drop_quarantined, name="drop"),
]
