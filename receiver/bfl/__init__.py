"""Talking to BFL: pure protocol logic (`sansio`, `validation`) and a thin httpx client (`client`)."""
