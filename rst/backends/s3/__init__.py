"""Archives in S3-compatible object storage (DICOM-RST's layout), reached through aiobotocore."""

from rst.backends.s3.backend import S3Backend, S3Index, S3StoreSession
from rst.backends.s3.client import S3Client, open_client

__all__ = ["S3Backend", "S3Client", "S3Index", "S3StoreSession", "open_client"]
