//! OpenAI Chat Completions client.
