"""The todos app: lists, who may see them (memberships) and their todos."""
