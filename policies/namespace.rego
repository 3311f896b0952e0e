# The namespace folder (GMDATA_NAMESPACE, default /world).
# Everyone may see and list it. Any caller may create exactly one folder in it: the one
# named after a value of their GMDATA_NAMESPACE_USERFIELD claim (default `email`).
# For a create, input.object is the folder being created.
# The claim name below is filled in from configuration at first start.
package vellum.namespace

import rego.v1

R := true

X := true

C if {
	input.action == "C"
	some v in input.claims.values[{{USERFIELD}}]
	input.object.name == v
}
