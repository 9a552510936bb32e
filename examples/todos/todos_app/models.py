"""The example's tables: users own lists, may share them, and lists hold todos."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class TodoList(Base):
    __tablename__ = "lists"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(sa.Text)
    name: Mapped[str] = mapped_column(sa.Text)


class Share(Base):
    """``user`` may see (and edit the todos of) ``list_id``."""

    __tablename__ = "shares"
    list_id: Mapped[int] = mapped_column(
        sa.ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True
    )
    user: Mapped[str] = mapped_column("user", sa.Text, primary_key=True)


class Todo(Base):
    __tablename__ = "todos"
    # Made by the client, so an optimistic insert has its final key from the start.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    list_id: Mapped[int] = mapped_column(sa.ForeignKey("lists.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(sa.Text)
    done: Mapped[bool] = mapped_column(default=False)
