"""Who may log in: keys and certificates, the second factor, the defender."""
