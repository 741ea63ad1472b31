"""`s2i-model live`: a picture every hop of what is sounding now (sources → window → loop → server)."""
