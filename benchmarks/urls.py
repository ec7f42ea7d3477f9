"""The benchmark projects' URLs: the status page, whose rendering the growth workload times."""

from django.urls import include, path

urlpatterns = [path("tasks/", include("procpool_tasks.urls"))]
