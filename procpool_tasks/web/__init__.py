"""The status page: ``views``, who may see it (``access``), and its chart (``chart``).

``procpool_tasks.urls`` routes to the views; the templates are in ``templates/procpool_tasks``.
"""
