#!/bin/bash
sort /app/words.txt | head -2 > /app/sorted.txt
