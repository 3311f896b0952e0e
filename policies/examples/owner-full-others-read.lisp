(if (contains email "x@example.com") (yield-all) (yield R X))
