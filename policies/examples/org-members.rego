# Rego v0, as in the gm-data tutorial: members of an org get everything.
package policy
inOrg { input.claims.values.org[_] == "www.deciphernow.com" }
C { inOrg }
R { inOrg }
U { inOrg }
D { inOrg }
X { inOrg }
P { inOrg }
