"""Persistence of the annotation service: images, projects and annotations (SQLAlchemy 2 ORM).

SQLite (a file) by default, PostgreSQL (or any SQLAlchemy URL with its driver installed) by
URL. Tables are created at startup; every write is one transaction (``Database.session``
commits on success and rolls back on any error).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    String,
    create_engine,
    event,
    exc,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from anyseg.errors import InputError

__all__ = ["AnnotationRow", "Base", "Database", "ImageRow", "ProjectRow", "open_database", "sqlite_path"]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # hex prefix of the content hash
    content_hash: Mapped[str] = mapped_column(String(64))  # full image_hash (the embedding cache key)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))
    nbytes: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(default=_now)


class ProjectRow(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256))
    created: Mapped[datetime] = mapped_column(default=_now)
    annotations: Mapped[list[AnnotationRow]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True)


class AnnotationRow(Base):
    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    label: Mapped[str] = mapped_column(String(256))
    rle: Mapped[dict] = mapped_column(JSON)  # compressed COCO RLE, str counts
    area: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    created: Mapped[datetime] = mapped_column(default=_now)
    updated: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)
    project: Mapped[ProjectRow] = relationship(back_populates="annotations")


def sqlite_path(db_url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL; ``None`` for other databases and in-memory SQLite."""
    try:
        url = make_url(db_url)
    except exc.ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


class Database:
    """An engine, its session factory and the tables."""

    def __init__(self, db_url: str):
        self.url = db_url
        try:
            url = make_url(db_url)
        except exc.ArgumentError:
            raise InputError(f"bad database URL {db_url!r}: expected e.g. sqlite:///anyseg.db or "
                             "postgresql+psycopg://user@host/dbname") from None
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False}
            path = sqlite_path(db_url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = create_engine(url, **kwargs)
        except (exc.NoSuchModuleError, ImportError, exc.ArgumentError) as e:
            raise InputError(f"cannot use database URL {url.render_as_string(hide_password=True)!r}: "
                             f"{str(e).splitlines()[0]}") from None
        if url.get_backend_name() == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        try:
            Base.metadata.create_all(self.engine)
        except exc.SQLAlchemyError as e:
            msg = str(getattr(e, "orig", None) or e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"cannot open database {url.render_as_string(hide_password=True)!r}: {msg}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends normally, rolled back otherwise."""
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(db_url: str) -> Database:
    return Database(db_url)
