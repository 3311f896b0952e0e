# Rego v1: the owner has every letter; anyone in the `readers` role may read and list.
package share.example

import rego.v1

owner if "jane.doe@deciphernow.com" in input.claims.values.email

reader if "readers" in input.claims.values.role

C if owner
U if owner
D if owner
P if owner
R if owner
R if reader
X if owner
X if reader
