"""deeprec-serve: real-time recommendations with feedback that updates the models online, durably."""
