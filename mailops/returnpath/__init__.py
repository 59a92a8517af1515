"""The return path: what receivers send back (bounces, complaints, DMARC and TLS-RPT
reports), classified, stored, and turned into suppressions.

Python 3 standard library only: this package runs on the mail hosts, which have Debian's
python3 and nothing else (tests/test_returnpath_stdlib.py holds it to that).  Its only
mailops imports are mailops.errors and mailops.ops.postfixlines (for the delivery log's
DSN categories), both standard-library only too.

* :func:`classify` (classifier.py): message bytes + envelope -> :class:`Classified`
* address.py: the return-path address (HMAC token) and its token table
* store.py: the event store (sqlite), idempotent by message digest
* suppression.py: the suppression list (sqlite), CSV/JSON import/export, merge between hosts
"""

from mailops.returnpath.classifier import classify, digest_of
from mailops.returnpath.events import Bounce, Classified, Complaint, DmarcReport, DmarcRow, TlsReport

__all__ = ["classify", "digest_of", "Bounce", "Classified", "Complaint", "DmarcReport", "DmarcRow", "TlsReport"]
