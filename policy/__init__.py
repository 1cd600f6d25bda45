"""The CrossGuard policy pack: the co-op's agreed rules, checked on what the program registers."""
