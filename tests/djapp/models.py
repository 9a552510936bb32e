# mypy: disallow-subclassing-any=False
# (Django ships no type information: its classes are Any to mypy.)
"""Models of pysync.django's tests: a list, its members and items of many field types."""

from __future__ import annotations

from django.db import models


class TodoList(models.Model):
    title = models.CharField(max_length=40)

    class Meta:
        app_label = "djapp"


class Member(models.Model):
    todo_list = models.ForeignKey(TodoList, on_delete=models.CASCADE)
    user = models.CharField(max_length=20)

    class Meta:
        app_label = "djapp"


class Status(models.TextChoices):
    OPEN = "open"
    DONE = "done"
    LATER = "later"


class Item(models.Model):
    name = models.CharField(max_length=20, null=True, blank=True)
    n = models.IntegerField(null=True, blank=True)
    big = models.BigIntegerField(default=0)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    score = models.FloatField(null=True, blank=True)
    flag = models.BooleanField(null=True, blank=True)
    day = models.DateField(null=True, blank=True)
    at = models.DateTimeField(null=True, blank=True)
    uid = models.UUIDField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    data = models.JSONField(null=True, blank=True)
    todo_list = models.ForeignKey(TodoList, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        app_label = "djapp"
        # A default ordering is not an order_by() of the QuerySet: shapes ignore it.
        ordering = ["id"]


class OpenItem(Item):
    """A proxy: the same table."""

    class Meta:
        app_label = "djapp"
        proxy = True


class Special(Item):
    """Multi-table inheritance: its rows span two tables."""

    extra = models.IntegerField(default=0)

    class Meta:
        app_label = "djapp"
