"""An OpenAI-compatible server that answers MCQs with an inference strategy and passes other chats through."""
