# acme_ca front end against an external PostgreSQL:
#   docker build -t acme-ca .
#   docker run -e ACME_CA_DATABASE_URL=postgresql://... -e ACME_CA_BASE_URL=https://acme.example \
#              -p 14000:14000 acme-ca
# TLS is expected to terminate in front of the container (plain_http is on).
FROM python:3.11-slim-bookworm

RUN useradd --system --create-home --home-dir /var/lib/acme-ca acme-ca
WORKDIR /opt/acme-ca
COPY pyproject.toml README.md schema.sql ./
COPY acme_ca ./acme_ca
RUN pip install --no-cache-dir . \
    && rm -rf /root/.cache

USER acme-ca
ENV ACME_CA_HOME=/var/lib/acme-ca \
    ACME_CA_LISTEN=0.0.0.0:14000 \
    ACME_CA_PLAIN_HTTP=true
EXPOSE 14000
ENTRYPOINT ["acme-ca"]
CMD ["serve"]
