"""Errors of `dsv4.encoding`: each names where the input is wrong."""


class EncodingError(ValueError):
    """A chat request that cannot be rendered; names the message index and the field."""

    def __init__(self, message: str, *, index: int | None = None, field: str | None = None):
        where = []
        if index is not None:
            where.append(f"messages[{index}]")
        if field is not None:
            where.append(field)
        prefix = ".".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.index = index
        self.field = field


class DSMLError(ValueError):
    """A completion that does not follow the V4 format; `offset` is the character where parsing failed."""

    def __init__(self, message: str, *, offset: int):
        super().__init__(f"{message} (at character {offset})")
        self.offset = offset
