//! Identity: JWTs, USER_DN and anonymous callers. (Being written: see the helper's brief.)
