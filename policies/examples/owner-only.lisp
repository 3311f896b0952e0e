(if (contains email "jane.doe@deciphernow.com") (yield-all))
