# A minimal stub of msgpack (it ships no type hints): the calls this project makes, typed as
# msgpack 1.x documents them. mypy finds it through [tool.mypy] mypy_path in pyproject.toml.
# Add a name here when the code starts using it.

from collections.abc import Callable
from typing import Any

def packb(
    o: Any,
    *,
    default: Callable[[Any], Any] | None = ...,
    use_single_float: bool = ...,
    use_bin_type: bool = ...,
    strict_types: bool = ...,
    datetime: bool = ...,
    unicode_errors: str | None = ...,
) -> bytes: ...
def unpackb(
    packed: bytes | bytearray | memoryview,
    *,
    raw: bool = ...,
    use_list: bool = ...,
    strict_map_key: bool = ...,
    timestamp: int = ...,
    object_hook: Callable[[dict[Any, Any]], Any] | None = ...,
    list_hook: Callable[[list[Any]], Any] | None = ...,
    unicode_errors: str | None = ...,
    max_buffer_size: int = ...,
) -> Any: ...

class Packer:
    def __init__(
        self,
        *,
        default: Callable[[Any], Any] | None = ...,
        use_single_float: bool = ...,
        autoreset: bool = ...,
        use_bin_type: bool = ...,
        strict_types: bool = ...,
        datetime: bool = ...,
        unicode_errors: str | None = ...,
    ) -> None: ...
    def pack(self, obj: Any) -> bytes: ...
