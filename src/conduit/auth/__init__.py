"""Who may log in, beyond the keys under each user: certificates, second factor, defender."""
