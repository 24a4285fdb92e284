"""coffer_client: the Python client for cofferd's data socket (package coffer.v1).

    from coffer_client import Client, errors

    with Client("/run/coffer/data.sock") as coffer:
        coffer.put_record("crm", b"contact/42", b'{"name": "Jane"}')
        value = coffer.get_record("crm", b"contact/42")
        try:
            coffer.get_record("crm", b"contact/43")
        except errors.RecordNotFoundError:
            ...

client.py states the contracts (threads, the connection pool, retries, failures, secrets);
attachments.py the streamed uploads and downloads; errors.py the typed errors. Needs Debian's
python3-protobuf and the coffer.v1 modules protoc generates at build time (CMake target
coffer_client_python: BUILD/python on PYTHONPATH). docs/python-client.md has the whole guide.
"""

from . import errors
from .client import (DEFAULT_CHUNK_BYTES, DEFAULT_MAX_FRAME_BYTES, MASK_EMAIL, MASK_NONE,
                     MASK_PHONE, PIPELINE_BYTES, PIPELINE_DEPTH, AttachmentInfo,
                     AttachmentReader, AttachmentWriter, Client, ClientOptions, PseudonymBatch,
                     RecordPage, RecordPipeline)
from .errors import CofferError

__all__ = [
    "AttachmentInfo", "AttachmentReader", "AttachmentWriter", "Client", "ClientOptions",
    "CofferError", "DEFAULT_CHUNK_BYTES", "DEFAULT_MAX_FRAME_BYTES", "MASK_EMAIL", "MASK_NONE",
    "MASK_PHONE", "PIPELINE_BYTES", "PIPELINE_DEPTH", "PseudonymBatch", "RecordPage",
    "RecordPipeline", "errors",
]
