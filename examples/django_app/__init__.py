"""A Django app that sends commands inside `transaction.atomic()`."""
