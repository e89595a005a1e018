//! behavry-authz
