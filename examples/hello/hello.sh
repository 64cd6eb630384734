#!/bin/sh
echo "$GREETING!"
cat /app/built.txt
echo "running as $(id -un) in $(pwd) on host $(hostname)"
