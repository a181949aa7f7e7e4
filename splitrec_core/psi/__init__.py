"""ID alignment: private set intersection, then each party's rows in one common order.

`align` drives it (a party's side, or every party in this process) over one `PsiProtocol`:
`ecdh` (splitrec's own exchange over X25519; its arithmetic in `points`) or `rr22` (SecretFlow's
RR22 through spu, a pair per feature party: `rr22_links`, `rr22_pair`, `rr22_worker`). What
both share is in `positions`.
"""

from splitrec_core.psi.align import Alignment, PsiFiles, align_local, feature_side, label_side
from splitrec_core.psi.positions import EmptyIntersection
from splitrec_core.psi.protocol import PsiProtocol, psi_protocol

__all__ = ["Alignment", "EmptyIntersection", "PsiFiles", "PsiProtocol", "align_local",
           "feature_side", "label_side", "psi_protocol"]
