"""The workflows: each change run through the ports, resumable, under the model's lock."""
