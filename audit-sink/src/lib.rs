//! behavry-audit
