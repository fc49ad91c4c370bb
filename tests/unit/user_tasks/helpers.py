def question(doc: dict) -> str:
    return f"Country: {doc['country']}\nCapital:"
