//! Policies: the gm-data Lisp language and Rego. (Being written: see the helper's brief.)
